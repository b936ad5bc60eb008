package schemas

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
