package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sample is one line of Prometheus' text exposition format.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Samples are a scrape, or several added together.
type Samples []Sample

// ParseMetrics reads the text exposition format (what /metrics serves); comments are skipped.
func ParseMetrics(body []byte) (Samples, error) {
	var out Samples
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := Sample{Labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
			s.Name = line[:i]
			end, err := parseLabels(line[i+1:], s.Labels)
			if err != nil {
				return nil, fmt.Errorf("metrics line %q: %w", line, err)
			}
			rest = line[i+1+end:]
		} else if i >= 0 {
			s.Name, rest = line[:i], line[i:]
		}
		fields := strings.Fields(rest)
		if s.Name == "" || len(fields) == 0 {
			return nil, fmt.Errorf("metrics line %q has no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		s.Value = v
		out = append(out, s)
	}
	return out, sc.Err()
}

// parseLabels reads `name="value",...}` into labels and returns how many bytes it read.
func parseLabels(s string, labels map[string]string) (int, error) {
	i := 0
	for {
		for i < len(s) && (s[i] == ',' || s[i] == ' ') {
			i++
		}
		if i < len(s) && s[i] == '}' {
			return i + 1, nil
		}
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 || i+eq+1 >= len(s) || s[i+eq+1] != '"' {
			return 0, errors.New("malformed labels")
		}
		name := s[i : i+eq]
		i += eq + 2
		var v strings.Builder
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					v.WriteByte('\n')
				default:
					v.WriteByte(s[i])
				}
				continue
			}
			v.WriteByte(s[i])
		}
		if i >= len(s) {
			return 0, errors.New("unterminated label value")
		}
		labels[name] = v.String()
		i++
	}
}

// sum adds up the samples of a metric whose labels match the given name/value pairs.
func (ss Samples) sum(name string, labelPairs ...string) float64 {
	var total float64
next:
	for _, s := range ss {
		if s.Name != name {
			continue
		}
		for i := 0; i+1 < len(labelPairs); i += 2 {
			if s.Labels[labelPairs[i]] != labelPairs[i+1] {
				continue next
			}
		}
		total += s.Value
	}
	return total
}

// quantile estimates a histogram's q-quantile as the upper bound of the first bucket holding it
// (Prometheus' buckets are cumulative), over every series of the histogram; ok is false when the
// histogram is absent or empty.
func (ss Samples) quantile(name string, q float64) (time.Duration, bool) {
	buckets := map[float64]float64{}
	for _, s := range ss {
		if s.Name != name+"_bucket" {
			continue
		}
		le, err := strconv.ParseFloat(s.Labels["le"], 64)
		if err != nil {
			continue
		}
		buckets[le] += s.Value
	}
	bounds := slices.Sorted(maps.Keys(buckets))
	if len(bounds) == 0 || buckets[bounds[len(bounds)-1]] == 0 {
		return 0, false
	}
	want := q * buckets[bounds[len(bounds)-1]]
	for _, le := range bounds {
		if buckets[le] >= want {
			if math.IsInf(le, 1) {
				return time.Duration(math.MaxInt64), true
			}
			return time.Duration(le * float64(time.Second)), true
		}
	}
	return 0, false
}

// vmHWM reads the peak resident set size (VmHWM) from a /proc/<pid>/status file, in bytes.
func vmHWM(status []byte) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmHWM line %q is not in kB", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmHWM line %q: %w", line, err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmHWM in the process status")
}

// percentile is the nearest-rank percentile of sorted durations (q in (0, 1]).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// median of values (the mean of the middle two for an even count).
func median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	v := slices.Sorted(slices.Values(values))
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
