package worker

import (
	"context"
	"slices"
	"sync"

	"github.com/rerank/rerank/schemas"
)

// slotPool is the worker's Concurrency job slots, shared by every model and
// lane it serves. A slot is taken only for a job in hand, never held by a
// pull request waiting for jobs, so an idle model costs the busy ones
// nothing.
//
// Lanes go through the pool as they go through the scheduler: Reserve of
// the slots are the interactive lane's alone (bulk jobs hold at most
// Concurrency − Reserve), so a bulk backfill that fills the worker still
// leaves an interactive job a slot at once, and its pairs then go first in
// the pipeline's scheduler. Jobs in hand wait for a slot in one queue per
// (lane, model): interactive before bulk, bulk every bulkEvery-th grant
// while both wait, and round-robin over the models within a lane.
//
// Pullers claim what they fetch (claim, before the pull request): the
// claims of all pullers together stay within the open slots, except that
// every puller may always ask for one job while its lane has a slot free,
// so the jobs a worker holds are at most Concurrency plus one per consumer
// it pulls from (models × lanes × job streams): the documented prefetch.
type slotPool struct {
	mu      sync.Mutex
	size    int
	bulkCap int // slots bulk jobs may hold: size − the interactive reserve
	// Per lane (laneIndex): slots held, jobs in line for one, jobs
	// received that have not asked yet (arrive → acquire or landed), and
	// jobs asked for by pull requests in flight (claim → arrive/unclaim).
	busy, waiting, arriving, claimed [2]int
	queues                           map[laneModel][]*slotWaiter
	order                            [2][]string // models per lane in round-robin order
	next                             [2]int      // round-robin cursor per lane
	sinceBulk                        int
	bulkEvery                        int
	changed                          chan struct{} // closed (and replaced) when demand may have grown
}

type laneModel struct {
	lane  schemas.Lane
	model string
}

type slotWaiter struct {
	ch      chan struct{} // closed when granted
	granted bool
}

// bulkShareEvery: bulk jobs get every tenth slot while interactive jobs wait.
const bulkShareEvery = 10

// newSlotPool returns a pool of n slots of which reserve only interactive
// jobs may take (clamped to n−1, so that bulk always has one).
func newSlotPool(n, reserve int) *slotPool {
	reserve = max(min(reserve, n-1), 0)
	return &slotPool{size: n, bulkCap: n - reserve, queues: map[laneModel][]*slotWaiter{}, bulkEvery: bulkShareEvery, changed: make(chan struct{})}
}

func laneIndex(l schemas.Lane) int {
	if l == schemas.Bulk {
		return 1
	}
	return 0
}

func (p *slotPool) free() int { return p.size - p.busy[0] - p.busy[1] }

// room is how many more jobs of lane li the slots can take beyond those
// already held, in line or on their way (arriving), and, with claims, the
// jobs pull requests have asked for. Bulk jobs count against the
// interactive lane's room only as far as bulk may still take slots: a bulk
// job in line behind bulkCap takes none.
func (p *slotPool) room(li int, claims bool) int {
	inter := p.waiting[0] + p.arriving[0]
	bulk := p.waiting[1] + p.arriving[1]
	if claims {
		inter += p.claimed[0]
		bulk += p.claimed[1]
	}
	bulkFree := max(p.bulkCap-p.busy[1], 0)
	if li == 1 {
		return min(p.free()-inter, bulkFree) - bulk
	}
	return p.free() - inter - min(bulk, bulkFree)
}

// claim waits until lane has room and claims what one puller of it may
// fetch: its share (1/streams, rounded up) of the room no other pull
// request has claimed, and at least one job while a slot is free for the
// lane beyond the jobs in hand. It returns 0, having claimed nothing, once
// ctx has ended. The caller turns each claimed job it receives into an
// arrival (arrive) and gives back the rest (unclaim).
func (p *slotPool) claim(ctx context.Context, lane schemas.Lane, streams int) int {
	li := laneIndex(lane)
	for {
		if ctx.Err() != nil {
			return 0
		}
		p.mu.Lock()
		n := p.room(li, true)
		n = (n + streams - 1) / max(streams, 1)
		if n <= 0 && p.room(li, false) > 0 {
			n = 1 // the prefetch: one job per puller
		}
		ch := p.changed
		if n > 0 {
			p.claimed[li] += n
			p.mu.Unlock()
			return n
		}
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0
		}
	}
}

// unclaim gives back n claimed jobs the pull request did not bring.
func (p *slotPool) unclaim(lane schemas.Lane, n int) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	li := laneIndex(lane)
	p.claimed[li] = max(p.claimed[li]-n, 0)
	p.broadcast()
	p.mu.Unlock()
}

// arrive turns one claimed job into a job received: until it asks for its
// slot (acquire) or is handed back (landed), the room leaves space for it.
func (p *slotPool) arrive(lane schemas.Lane) {
	p.mu.Lock()
	li := laneIndex(lane)
	p.claimed[li] = max(p.claimed[li]-1, 0)
	p.arriving[li]++
	p.mu.Unlock()
}

// landed is a received job that will not ask for a slot (handed back first).
func (p *slotPool) landed(lane schemas.Lane) {
	p.mu.Lock()
	li := laneIndex(lane)
	p.arriving[li] = max(p.arriving[li]-1, 0)
	p.broadcast()
	p.mu.Unlock()
}

// acquire takes a slot for a job of model in lane, waiting in line when
// none is free for its lane. It reports false, having taken nothing, when
// ctx ends first.
func (p *slotPool) acquire(ctx context.Context, model string, lane schemas.Lane) bool {
	li := laneIndex(lane)
	p.mu.Lock()
	p.arriving[li] = max(p.arriving[li]-1, 0) // now in line or served: counted there
	// A job in line while a slot is free is a bulk job at bulkCap (release
	// grants the others): it does not stand in front of this one.
	if p.free() > 0 && (li == 0 || p.busy[1] < p.bulkCap) {
		p.busy[li]++
		p.mu.Unlock()
		return true
	}
	w := &slotWaiter{ch: make(chan struct{})}
	k := laneModel{lane, model}
	if !slices.Contains(p.order[li], model) {
		p.order[li] = append(p.order[li], model)
	}
	p.queues[k] = append(p.queues[k], w)
	p.waiting[li]++
	p.mu.Unlock()
	select {
	case <-w.ch:
		return true
	case <-ctx.Done():
	}
	p.mu.Lock()
	if w.granted {
		p.mu.Unlock()
		p.release(lane)
		return false
	}
	if i := slices.Index(p.queues[k], w); i >= 0 {
		p.queues[k] = slices.Delete(p.queues[k], i, i+1)
		p.waiting[li]--
	}
	p.broadcast()
	p.mu.Unlock()
	return false
}

// release returns a slot a job of lane held: to the next jobs in line that
// may take it, else to the pool.
func (p *slotPool) release(lane schemas.Lane) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.busy[laneIndex(lane)]--
	for p.free() > 0 {
		w, li := p.nextWaiter()
		if w == nil {
			break
		}
		p.busy[li]++
		w.granted = true
		close(w.ch)
	}
	p.broadcast()
}

// nextWaiter pops the job that gets the next free slot, and its lane, or
// nil: a bulk job only while bulk holds fewer than bulkCap slots.
func (p *slotPool) nextWaiter() (*slotWaiter, int) {
	bulkOK := p.waiting[1] > 0 && p.busy[1] < p.bulkCap
	li := 0
	switch {
	case p.waiting[0] == 0 && !bulkOK:
		return nil, 0
	case bulkOK && (p.waiting[0] == 0 || p.sinceBulk+1 >= p.bulkEvery):
		li, p.sinceBulk = 1, 0
	default:
		if p.waiting[1] > 0 {
			p.sinceBulk++
		}
	}
	lane := schemas.Interactive
	if li == 1 {
		lane = schemas.Bulk
	}
	models := p.order[li]
	for range models {
		m := models[p.next[li]%len(models)]
		p.next[li]++
		k := laneModel{lane, m}
		if q := p.queues[k]; len(q) > 0 {
			p.queues[k] = q[1:]
			p.waiting[li]--
			return q[0], li
		}
	}
	return nil, 0
}

func (p *slotPool) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}
