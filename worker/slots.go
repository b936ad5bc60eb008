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
// nothing. Jobs in hand wait for a slot in one queue per (lane, model):
// interactive before bulk, bulk every bulkEvery-th grant while both wait,
// and round-robin over the models within a lane.
type slotPool struct {
	mu        sync.Mutex
	free      int
	queues    map[laneModel][]*slotWaiter
	order     [2][]string // models per lane in round-robin order
	next      [2]int      // round-robin cursor per lane
	waiting   [2]int      // waiters per lane
	arriving  int         // jobs fetched that have not asked for a slot yet
	sinceBulk int
	bulkEvery int
	changed   chan struct{} // closed (and replaced) when demand may have grown
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

func newSlotPool(n int) *slotPool {
	return &slotPool{free: n, queues: map[laneModel][]*slotWaiter{}, bulkEvery: bulkShareEvery, changed: make(chan struct{})}
}

func laneIndex(l schemas.Lane) int {
	if l == schemas.Bulk {
		return 1
	}
	return 0
}

// arrive counts a job a puller received: until it asks for its slot
// (acquire) or is handed back (landed), demand leaves room for it, so that
// a puller looping back at once does not fetch the same free slots again.
func (p *slotPool) arrive() {
	p.mu.Lock()
	p.arriving++
	p.mu.Unlock()
}

// landed is a received job that will not ask for a slot (handed back first).
func (p *slotPool) landed() {
	p.mu.Lock()
	p.arriving = max(p.arriving-1, 0)
	p.broadcast()
	p.mu.Unlock()
}

// acquire takes a slot for a job of model in lane, waiting in line when
// none is free. It reports false, having taken nothing, when ctx ends first.
func (p *slotPool) acquire(ctx context.Context, model string, lane schemas.Lane) bool {
	p.mu.Lock()
	p.arriving = max(p.arriving-1, 0) // now in line or served: counted there
	if p.free > 0 && p.waiting[0]+p.waiting[1] == 0 {
		p.free--
		p.mu.Unlock()
		return true
	}
	w := &slotWaiter{ch: make(chan struct{})}
	k := laneModel{lane, model}
	li := laneIndex(lane)
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
		p.release()
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

// release returns a slot: to the next job in line, else to the pool.
func (p *slotPool) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w := p.nextWaiter(); w != nil {
		w.granted = true
		close(w.ch)
		return
	}
	p.free++
	p.broadcast()
}

// nextWaiter pops the job that gets the next slot, or nil.
func (p *slotPool) nextWaiter() *slotWaiter {
	li := 0
	switch {
	case p.waiting[0] == 0 && p.waiting[1] == 0:
		return nil
	case p.waiting[1] > 0 && (p.waiting[0] == 0 || p.sinceBulk+1 >= p.bulkEvery):
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
			return q[0]
		}
	}
	return nil
}

func (p *slotPool) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// demand waits until slots are free beyond the jobs already waiting for
// one or on their way to ask (arrive), and returns how many: what a puller
// may fetch without making a job wait. It returns 0 once ctx has ended.
func (p *slotPool) demand(ctx context.Context) int {
	for {
		if ctx.Err() != nil {
			return 0
		}
		p.mu.Lock()
		n := p.free - p.waiting[0] - p.waiting[1] - p.arriving
		ch := p.changed
		p.mu.Unlock()
		if n > 0 {
			return n
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0
		}
	}
}
