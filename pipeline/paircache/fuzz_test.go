package paircache

import (
	"math/rand/v2"
	"testing"
)

// The cache agrees with a model of it (a map and an LRU order) over random
// operations, with the index growing and entries evicted.
func TestAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 2, 7, 100, 3000} {
		c := New(int64(size) * EntryBytes)
		var order []Key // least recent first
		vals := map[Key]float32{}
		use := func(k Key) {
			for i, o := range order {
				if o == k {
					order = append(order[:i], order[i+1:]...)
					break
				}
			}
			order = append(order, k)
		}
		for op := range 20000 {
			k := key(r.IntN(3 * size))
			if r.IntN(2) == 0 {
				s, ok := c.Get(k)
				want, wok := vals[k]
				if ok != wok || ok && s != want {
					t.Fatalf("size %d op %d: Get = %v %v, want %v %v", size, op, s, ok, want, wok)
				}
				if ok {
					use(k)
				}
				continue
			}
			v := float32(op)
			c.Put(k, v)
			if _, ok := vals[k]; !ok && len(vals) == size {
				delete(vals, order[0])
				order = order[1:]
			}
			vals[k] = v
			use(k)
		}
		if st := c.Stats(); st.Entries != len(vals) {
			t.Fatalf("size %d: %d entries, want %d", size, st.Entries, len(vals))
		}
	}
}
