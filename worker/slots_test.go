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
	for p.free > 0 {
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
	for range waiters {
		p.release()
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
	p := newSlotPool(1)
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
	p := newSlotPool(1)
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

func TestIdleDemandHoldsNoSlot(t *testing.T) {
	p := newSlotPool(2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 3 { // three idle pullers asking what they may fetch
		if n := p.demand(ctx); n != 2 {
			t.Fatalf("demand %d, want 2", n)
		}
	}
	if !p.acquire(ctx, "busy", schemas.Interactive) || !p.acquire(ctx, "busy", schemas.Interactive) {
		t.Fatal("the busy model could not take both slots")
	}
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	defer stop()
	if n := p.demand(short); n != 0 {
		t.Fatalf("demand %d with every slot taken", n)
	}
	// Once ctx ends a puller stops, free slots or not (shutdown).
	p.release()
	cancel()
	if n := p.demand(ctx); n != 0 {
		t.Fatalf("demand %d after ctx ended", n)
	}
}
