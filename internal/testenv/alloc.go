package testenv

import "runtime"

// Allocated is how many bytes f allocates on the heap (after a GC, so that
// the figure is f's own): the measure of the tests that bound what hostile
// input may cost.
func Allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
