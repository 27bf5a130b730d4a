//go:build !brokendeadline

package main

// deadlineDisabled reports whether the sync deadline is switched off: never
// in a normal build. Only a build with the brokendeadline tag (the
// multi-host harness's negative control, .ci/multihost.sh) can switch it
// off, with BN_BREAK_DEADLINE=1.
func deadlineDisabled() bool { return false }
