//go:build mpi

package mpi

// Hooks for the external tests (package mpi_test).

// RawAllGather is rawAllGather (AllGather without the header exchange).
var RawAllGather = rawAllGather

type Resources = resources

var (
	CurrentResources       = currentResources
	Reap                   = reap
	WorldErrhandlerIsFatal = worldErrhandlerIsFatal
	ErrhandlerReturns      = errhandlerReturns
	MPIState               = mpiState
	AppInit                = appInit
	LastFused              = lastFused
)

// SetInitFail makes Init fail at step (see initFail).
func SetInitFail(step string) { initFail = step }

// SetSeparateHeader turns the fused header exchange off (on) for the
// benchmarks; call it between calls, the same way on every rank.
func SetSeparateHeader(on bool) { separateHeader = on }

// SetMomentsPath forces the path of Moments all-reduces: "auto",
// "reduce" (MPI_Ireduce + MPI_Ibcast) or "allreduce" (MPI_Iallreduce with
// the user op). Call it between calls, the same way on every rank.
func SetMomentsPath(p string) {
	momentsPath = map[string]int{"auto": pathAuto, "reduce": pathReduce, "allreduce": pathAllReduce}[p]
}
