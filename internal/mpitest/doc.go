// Package mpitest holds the tests of SyncBN and distributed PreciseBN over
// the MPI backend (build tag mpi). Run them under mpirun, e.g.
//
//	go test -c -tags mpi -o bnmpi.test ./internal/mpitest
//	mpirun -np 4 --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 ./bnmpi.test
//
// Every rank builds the whole global data from a shared seed, computes the
// single-process reference over the concatenated batch itself, and checks
// its own part of the distributed result against it.
package mpitest
