package gateway

import "time"

// LongestArray exports longestArray to the fuzz test.
var LongestArray = longestArray

// DigestLog exports digestLog to the tests.
type DigestLog struct{ digestLog }

func (d *DigestLog) Record(model, digest string, now time.Time)  { d.record(model, digest, now) }
func (d *DigestLog) Recent(model string, now time.Time) []string { return d.recent(model, now) }
