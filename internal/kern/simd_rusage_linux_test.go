//go:build linux

package kern

import "syscall"

// cpuTime returns the CPU time (user + system) of the process so far, in
// nanoseconds: benchmarks report it per op next to the wall time, which is
// what a busy shared machine distorts most.
func cpuTime() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
