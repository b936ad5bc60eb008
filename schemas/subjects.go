package schemas

import (
	"hash/fnv"
	"strconv"
)

// Subjects and streams of the wire contract: jobs for model M are published
// to JobsPrefix+M, results to the job's reply_to or ResultsPrefix+id, and
// dead letters go to DeadPrefix+M.
const (
	JobsPrefix    = "rerank.jobs."
	ResultsPrefix = "rerank.results."
	DeadPrefix    = "rerank.dead."

	JobsStream    = "RERANK_JOBS"
	ResultsStream = "RERANK_RESULTS"
	DeadStream    = "RERANK_DEAD"
)

// JobSubject is the subject jobs for model are published to.
func JobSubject(model string) string { return JobsPrefix + model }

// ResultSubject is the default subject of a job's result.
func ResultSubject(jobID string) string { return ResultsPrefix + jobID }

// Partitions spread one model's jobs over several job streams, each with
// its own leader (docs/scaling.md): partition p of a lane is
// rerank.jobs.<model>.p<p> (interactive) or rerank.jobs.<model>.bulk.p<p>,
// stored in stream RERANK_JOBS_P<p>. Producers pick a job's partition from
// its id (PartitionOf), so a retried job lands where its first copy did and
// JetStream's dedup window still recognizes it.
const MaxPartitions = 64

// PartitionStream is the job stream of partition p.
func PartitionStream(p int) string { return JobsStream + "_P" + strconv.Itoa(p) }

// PartitionSubject is the subject of partition p of model's lane.
func PartitionSubject(model string, lane Lane, p int) string {
	return LaneSubject(model, lane) + ".p" + strconv.Itoa(p)
}

// PartitionOf is the partition, of n, of the job with this id: FNV-1a of
// the id modulo n, the same in every producer and language.
func PartitionOf(jobID string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(jobID))
	return int(h.Sum32() % uint32(n))
}
