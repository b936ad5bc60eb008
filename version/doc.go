// Package version tells which build of rerank this is: the module version,
// the VCS revision, its time and whether the tree was modified, and the Go
// version, as the Go toolchain stamped them into the binary.
//
// It may import the standard library only: every command, the metrics
// and anything that reports a build can use it.
package version
