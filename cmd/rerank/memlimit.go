package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryFiles hold the container's memory limit (cgroup v2, then v1).
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// autoMemoryShare is the part of the container's memory limit given to the
// Go heap: the rest is ONNX Runtime's (its arena and the model weights live
// outside the Go heap).
const autoMemoryShare = 0.75

// applyMemoryLimit sets the Go runtime's soft memory limit, so that garbage
// (a hostile job's decoded fields, say) is collected before the container
// is OOM-killed. spec is "auto" (75% of the cgroup limit, unless GOMEMLIMIT
// is set), "off", or a size such as "1536MiB". It returns the limit set, in
// bytes (0: none).
func applyMemoryLimit(spec string) (int64, error) {
	switch strings.ToLower(strings.TrimSpace(spec)) {
	case "off", "":
		return 0, nil
	case "auto":
		if os.Getenv("GOMEMLIMIT") != "" {
			return debug.SetMemoryLimit(-1), nil // the runtime already applied it
		}
		limit := cgroupMemoryLimit()
		if limit <= 0 {
			return 0, nil
		}
		n := int64(float64(limit) * autoMemoryShare)
		debug.SetMemoryLimit(n)
		return n, nil
	}
	n, err := parseSize(spec)
	if err != nil {
		return 0, fmt.Errorf("--memory-limit %q: %w (want auto, off or a size such as 1536MiB)", spec, err)
	}
	debug.SetMemoryLimit(n)
	return n, nil
}

// cgroupMemoryLimit is the container's memory limit in bytes, or 0 when
// there is none ("max", or no cgroup file).
func cgroupMemoryLimit() int64 {
	for _, f := range cgroupMemoryFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 { // "max", or v1's "unlimited" page-rounded max
			return 0
		}
		return n
	}
	return 0
}

// parseSize reads a byte count with an optional unit: B, KiB, MiB, GiB
// (or K, M, G, and KB, MB, GB as powers of 1,000).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("not a positive size")
	}
	mult := map[string]float64{"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
		"kb": 1e3, "mb": 1e6, "gb": 1e9}[strings.ToLower(unit)]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q", unit)
	}
	return int64(v * mult), nil
}
