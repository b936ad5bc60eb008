package paircache

import (
	"context"
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/rerank/rerank/model/wordpiece"
)

func key(i int) Key {
	var k Key
	binary.LittleEndian.PutUint64(k[:], uint64(i))
	return k
}

func TestKeyOf(t *testing.T) {
	enc := wordpiece.Encoding{IDs: []int64{101, 2054, 102, 3000, 102}, TypeIDs: []int64{0, 0, 0, 1, 1}}
	base := KeyOf("d1", enc)
	if KeyOf("d1", enc) != base {
		t.Fatal("KeyOf is not deterministic")
	}
	other := []struct {
		what   string
		digest string
		enc    wordpiece.Encoding
	}{
		{"another model", "d2", enc},
		{"another token", "d1", wordpiece.Encoding{IDs: []int64{101, 2054, 102, 3001, 102}, TypeIDs: enc.TypeIDs}},
		{"other type ids", "d1", wordpiece.Encoding{IDs: enc.IDs, TypeIDs: []int64{0, 0, 1, 1, 1}}},
		{"a token less", "d1", wordpiece.Encoding{IDs: enc.IDs[:4], TypeIDs: enc.TypeIDs[:4]}},
		{"digest and ids shifted", "d1e", wordpiece.Encoding{IDs: enc.IDs[1:], TypeIDs: enc.TypeIDs[1:]}},
	}
	for _, o := range other {
		if KeyOf(o.digest, o.enc) == base {
			t.Errorf("%s: same key", o.what)
		}
	}
}

// The least recently used entry goes first, and a read counts as a use.
func TestLRU(t *testing.T) {
	c := New(3 * EntryBytes)
	for i := range 3 {
		c.Put(key(i), float32(i))
	}
	if _, ok := c.Get(key(0)); !ok { // 0 is now the most recent
		t.Fatal("0 missing")
	}
	c.Put(key(3), 3) // evicts 1
	for i, want := range map[int]bool{0: true, 1: false, 2: true, 3: true} {
		if s, ok := c.Get(key(i)); ok != want || ok && s != float32(i) {
			t.Errorf("key %d: %v %v, want present=%v", i, s, ok, want)
		}
	}
	st := c.Stats()
	if st.Entries != 3 || st.Evictions != 1 || st.Bytes != 3*EntryBytes {
		t.Errorf("stats %+v", st)
	}
	c.Put(key(2), 20) // an update, not a new entry
	if s, _ := c.Get(key(2)); s != 20 || c.Stats().Entries != 3 {
		t.Errorf("update: %v, %d entries", s, c.Stats().Entries)
	}
}

// A full cache holds no more than its bound, as the heap measures it.
func TestMemoryBound(t *testing.T) {
	for _, mib := range []int64{3, 16, 24} {
		memoryBound(t, mib<<20)
	}
}

func memoryBound(t *testing.T, maxBytes int64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := New(maxBytes)
	n := int(3 * maxBytes / EntryBytes)
	for i := range n {
		c.Put(key(i), float32(i))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := c.Stats()
	if int64(st.Entries) != maxBytes/EntryBytes || st.Bytes > maxBytes {
		t.Fatalf("%d entries (%d bytes) after %d puts, want %d", st.Entries, st.Bytes, n, maxBytes/EntryBytes)
	}
	used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d entries: %d bytes of heap, %.1f per entry", st.Entries, used, float64(used)/float64(st.Entries))
	if used > maxBytes {
		t.Fatalf("a cache bounded at %d bytes holds %d bytes of heap", maxBytes, used)
	}
	runtime.KeepAlive(c)
}

// One owner per key in flight; the others wait for its score, or score
// it themselves when it is abandoned.
func TestSingleFlight(t *testing.T) {
	c := New(1 << 20)
	ctx := context.Background()
	_, hit, f1, owner := c.Lookup(key(1), Owner{})
	if hit || !owner {
		t.Fatal("the first lookup does not own the flight")
	}
	_, hit, f2, owner := c.Lookup(key(1), Owner{})
	if hit || owner || f2 != f1 {
		t.Fatal("a second lookup of a key in flight does not share it")
	}
	got := make(chan float32, 1)
	go func() {
		s, ok, err := f2.Wait(ctx)
		if !ok || err != nil {
			s = -1
		}
		got <- s
	}()
	f1.Done(0.5)
	if s := <-got; s != 0.5 {
		t.Fatalf("waiter got %v", s)
	}
	if s, hit, _, _ := c.Lookup(key(1), Owner{}); !hit || s != 0.5 {
		t.Fatalf("after Done: %v %v", s, hit)
	}
	// Abandoned: the waiter learns it, and the next lookup owns a new flight.
	_, _, f3, _ := c.Lookup(key(2), Owner{})
	_, _, f4, _ := c.Lookup(key(2), Owner{})
	f3.Abandon()
	if _, ok, err := f4.Wait(ctx); ok || err != nil {
		t.Fatalf("waiting for an abandoned flight: ok=%v err=%v", ok, err)
	}
	if _, hit, _, owner := c.Lookup(key(2), Owner{}); hit || !owner {
		t.Fatal("after Abandon the key is neither cached nor free to claim")
	}
	// A waiter's own context bounds its wait; a flight tells its owner's rank.
	_, _, f5, _ := c.Lookup(key(3), Owner{Rank: 1, Pairs: 9})
	if f5.Owner() != (Owner{Rank: 1, Pairs: 9}) {
		t.Fatalf("owner %+v", f5.Owner())
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, _, err := f5.Wait(cctx); err == nil {
		t.Fatal("Wait outlived its context")
	}
	if st := c.Stats(); st.Hits != 1 || st.Misses != 6 {
		t.Errorf("stats %+v, want 1 hit, 6 misses", st)
	}
}

// Ending a flight twice does nothing the second time: no panic, and a
// newer flight of the key stays claimed.
func TestFlightEndsOnce(t *testing.T) {
	c := New(1 << 20)
	_, _, f, _ := c.Lookup(key(1), Owner{})
	f.Abandon()
	_, _, g, owner := c.Lookup(key(1), Owner{})
	if !owner || g == f {
		t.Fatal("no new flight after Abandon")
	}
	f.Done(1) // late: ignored
	f.Abandon()
	if _, hit, h, owner := c.Lookup(key(1), Owner{}); hit || owner || h != g {
		t.Fatalf("a late end of an old flight changed the new one: hit %v owner %v", hit, owner)
	}
	g.Done(2)
	g.Done(3)
	if s, ok := c.Get(key(1)); !ok || s != 2 {
		t.Fatalf("score %v %v, want 2", s, ok)
	}
}
