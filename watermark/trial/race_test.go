//go:build race

package trial

// raceEnabled: the race detector slows the scanner's code several times, and
// Pay charges its thread CPU time to the simulated clock.
const raceEnabled = true
