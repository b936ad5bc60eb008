// Package archtest holds only a test: the import rules of the packages'
// doc.go files (the architecture: edges and core import the contract,
// never each other), checked with `go list -deps`.
package archtest
