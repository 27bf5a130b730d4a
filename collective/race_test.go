//go:build race

package collective_test

// The race detector slows the copy and reduction loops ~10×: the suite uses
// shorter "large" buffers under it.
const raceEnabled = true
