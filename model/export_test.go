package model

// PrepareGraphForTest exposes prepareGraph to the external tests.
func PrepareGraphForTest(file string, data []byte, mapWeights, fuse bool) ([]byte, int, int, error) {
	g, st, err := prepareGraph(file, data, mapWeights, fuse)
	return g, st.mapped, st.fused, err
}
