package worker

import (
	"context"
	"testing"
	"time"

	"github.com/rerank/rerank/schemas"
)

// grantOrder fills the pool, queues the given waiters in order, then frees
// slots one at a time and returns which waiter got each.
func grantOrder(t *testing.T, p *slotPool, waiters []laneModel) []laneModel {
	t.Helper()
	for p.free() > 0 {
		if !p.acquire(context.Background(), "filler", schemas.Interactive) {
			t.Fatal("could not fill the pool")
		}
	}
	got := make(chan laneModel, len(waiters))
	for i, w := range waiters {
		go func() {
			if p.acquire(context.Background(), w.model, w.lane) {
				got <- w
			}
		}()
		deadline := time.Now().Add(5 * time.Second) // queue them in this order
		for queuedTotal(p) != i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("waiter %d never queued", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	var order []laneModel
	fillers := p.size
	for range waiters {
		if fillers > 0 { // the fillers' slots first, then each granted job's
			fillers--
			p.release(schemas.Interactive)
		} else {
			p.release(order[len(order)-p.size].lane)
		}
		order = append(order, <-got)
	}
	return order
}

func queuedTotal(p *slotPool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiting[0] + p.waiting[1]
}

func TestSlotsGoRoundRobinOverModels(t *testing.T) {
	a1 := laneModel{schemas.Interactive, "a"}
	b1 := laneModel{schemas.Interactive, "b"}
	p := newSlotPool(1, 0)
	// a queues three jobs before b queues one: b still gets the second slot.
	ws := []laneModel{a1, a1, a1, b1}
	order := grantOrder(t, p, ws)
	if order[0].model != "a" || order[1].model != "b" {
		t.Fatalf("grant order %v: b waited behind every job of a", order)
	}
}

func TestSlotsInteractiveFirstBulkKeepsAFloor(t *testing.T) {
	var ws []laneModel
	for range 3 {
		ws = append(ws, laneModel{schemas.Bulk, "m"})
	}
	for range 20 {
		ws = append(ws, laneModel{schemas.Interactive, "m"})
	}
	p := newSlotPool(1, 0)
	order := grantOrder(t, p, ws)
	if order[0].lane != schemas.Interactive {
		t.Fatalf("first grant went to %v while interactive jobs waited", order[0].lane)
	}
	firstBulk := -1
	for i, w := range order {
		if w.lane == schemas.Bulk {
			firstBulk = i
			break
		}
	}
	if firstBulk < 0 || firstBulk >= bulkShareEvery {
		t.Fatalf("first bulk grant at %d of %v: bulk starved", firstBulk, order)
	}
}

// Idle pullers claim jobs but hold no slot: the claims of all pullers stay
// within the free slots plus one each, and once they are given back (the
// pull request ended empty) a busy model takes every slot.
func TestIdleClaimsHoldNoSlot(t *testing.T) {
	p := newSlotPool(2, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var claims []int
	for range 3 { // three idle pullers asking what they may fetch
		claims = append(claims, p.claim(ctx, schemas.Interactive, 1))
	}
	if claims[0] != 2 || claims[1] != 1 || claims[2] != 1 {
		t.Fatalf("claims %v, want [2 1 1]: the free slots, then one each", claims)
	}
	for _, n := range claims {
		p.unclaim(schemas.Interactive, n)
	}
	if !p.acquire(ctx, "busy", schemas.Interactive) || !p.acquire(ctx, "busy", schemas.Interactive) {
		t.Fatal("the busy model could not take both slots")
	}
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	defer stop()
	if n := p.claim(short, schemas.Interactive, 1); n != 0 {
		t.Fatalf("claim %d with every slot taken", n)
	}
	// Once ctx ends a puller stops, free slots or not (shutdown).
	p.release(schemas.Interactive)
	cancel()
	if n := p.claim(ctx, schemas.Interactive, 1); n != 0 {
		t.Fatalf("claim %d after ctx ended", n)
	}
}

// Bulk jobs hold at most size − reserve slots: with every bulk slot taken
// (and more bulk jobs in line), an interactive job takes the reserved slot
// at once, and the bulk puller may claim nothing more than its one job of
// prefetch while the interactive puller may claim the reserve.
func TestBulkNeverTakesTheInteractiveSlots(t *testing.T) {
	p := newSlotPool(4, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		if !p.acquire(ctx, "m", schemas.Bulk) {
			t.Fatal("bulk could not take its slots")
		}
	}
	queued := make(chan bool)
	go func() { queued <- p.acquire(ctx, "m", schemas.Bulk) }() // waits: bulk is at its cap
	for deadline := time.Now().Add(5 * time.Second); queuedTotal(p) != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the fourth bulk job never queued")
		}
	}
	if n := p.claim(ctx, schemas.Interactive, 1); n != 1 {
		t.Fatalf("interactive claim %d, want the reserved slot", n)
	}
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	defer stop()
	if n := p.claim(short, schemas.Bulk, 1); n != 0 {
		t.Fatalf("bulk claim %d while bulk holds its cap", n)
	}
	p.arrive(schemas.Interactive)
	if !p.acquire(ctx, "m", schemas.Interactive) {
		t.Fatal("the interactive job waited")
	}
	// A bulk job's slot goes to the bulk job in line.
	p.release(schemas.Bulk)
	if !<-queued {
		t.Fatal("the queued bulk job got no slot")
	}
	// The interactive job's slot does not: bulk is at its cap again.
	p.release(schemas.Interactive)
	if p.free() != 1 || p.busy[1] != 3 {
		t.Fatalf("free %d, bulk busy %d; want the reserved slot free and 3 bulk", p.free(), p.busy[1])
	}
}
