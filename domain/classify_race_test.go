//go:build race

package domain

// raceEnabled: the race detector slows the regular expressions some twenty times.
const raceEnabled = true
