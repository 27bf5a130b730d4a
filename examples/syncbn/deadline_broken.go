//go:build brokendeadline

package main

import "os"

// deadlineDisabled reports whether BN_BREAK_DEADLINE=1 switches the sync
// deadline off. This file exists only in builds with the brokendeadline tag:
// .ci/multihost.sh builds such a binary once to show that its cut-link check
// fails when no deadline bounds the collectives (every rank then waits
// forever). Never use this tag for anything else.
func deadlineDisabled() bool { return os.Getenv("BN_BREAK_DEADLINE") == "1" }
