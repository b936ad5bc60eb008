// Package proc owns child processes of benchmarks and fault tests: start a
// command with its output in a log file, wait until the log says it is
// ready, stop it (SIGTERM, then SIGKILL after a grace) or kill it, and read
// what the kernel knows about it: CPU seconds and memory from /proc, and
// the machine's CPU time for utilisation.
//
// It may import the standard library only.
package proc
