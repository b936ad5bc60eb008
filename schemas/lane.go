package schemas

import "fmt"

// Lane is a job's priority class. The edge that receives a job chooses it
// (the JetStream worker from the subject the job came on), never the job's
// own bytes: Interactive jobs, where someone waits, go first; Bulk jobs
// (backfills, evaluations) keep a floor share so they always progress.
type Lane uint8

// The lanes, in priority order.
const (
	Interactive Lane = iota
	Bulk
)

// Lanes lists every lane in priority order.
var Lanes = []Lane{Interactive, Bulk}

// BulkSuffix is the subject token that puts a job in the bulk lane:
// rerank.jobs.<model>.bulk.
const BulkSuffix = ".bulk"

func (l Lane) String() string {
	if l == Bulk {
		return "bulk"
	}
	return "interactive"
}

// ParseLane reads "interactive" (or "") and "bulk".
func ParseLane(s string) (Lane, error) {
	switch s {
	case "", "interactive":
		return Interactive, nil
	case "bulk":
		return Bulk, nil
	}
	return Interactive, fmt.Errorf("lane %q: want interactive or bulk", s)
}

// MarshalText writes the lane's name.
func (l Lane) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads a lane's name.
func (l *Lane) UnmarshalText(b []byte) error {
	v, err := ParseLane(string(b))
	*l = v
	return err
}

// LaneSubject is the subject jobs for model in lane are published to.
func LaneSubject(model string, lane Lane) string {
	if lane == Bulk {
		return JobsPrefix + model + BulkSuffix
	}
	return JobsPrefix + model
}
