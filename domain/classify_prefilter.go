package domain

import (
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A message rule's regular expression is long (dozens of alternatives in several languages,
// bounded gaps such as .{0,200}), and Go runs such a program slowly over every message that
// reaches it. So each top-level alternative is compiled on its own with the literal text every
// match of it contains, and is run only when the message holds one of those literals: a few
// substring searches instead of the whole program, for the many rules and alternatives a message
// does not match. The literals are derived from the expression itself, so the two cannot disagree.

// branch is one top-level alternative of a rule's expression.
type branch struct {
	re *regexp.Regexp
	// literals holds strings (lower case) one of which every match contains; nil: none known,
	// the branch always runs.
	literals []string
}

// branchesOf splits a rule's expression into its top-level alternatives.
func branchesOf(re *regexp.Regexp) []branch {
	tree, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return []branch{{re: re}}
	}
	subs := []*syntax.Regexp{tree}
	if tree.Op == syntax.OpAlternate {
		subs = tree.Sub
	}
	out := make([]branch, 0, len(subs))
	for _, sub := range subs {
		lits, ok := literalsOf(sub)
		if !ok {
			lits = nil
		}
		out = append(out, branch{re: regexp.MustCompile(sub.String()), literals: lits})
	}
	return out
}

// literalsOf is a set of lower-case strings at least one of which every match of re contains;
// false when some match need contain none.
func literalsOf(re *syntax.Regexp) ([]string, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase == 0 {
			// A case-sensitive literal would need the message's own case; the rules are all
			// case-insensitive, so it is simply not used.
			return nil, false
		}
		for _, r := range re.Rune {
			if r >= utf8.RuneSelf && foldsToASCII(r) {
				return nil, false
			}
		}
		return []string{strings.ToLower(string(re.Rune))}, true
	case syntax.OpCapture:
		return literalsOf(re.Sub[0])
	case syntax.OpPlus:
		return literalsOf(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return literalsOf(re.Sub[0])
		}
	case syntax.OpAlternate:
		var all []string
		for _, sub := range re.Sub {
			lits, ok := literalsOf(sub)
			if !ok {
				return nil, false
			}
			all = append(all, lits...)
		}
		return all, true
	case syntax.OpConcat:
		// Any one part's literals will do: take the part whose shortest literal is longest.
		var best []string
		bestLen := 0
		for _, sub := range re.Sub {
			lits, ok := literalsOf(sub)
			if !ok {
				continue
			}
			if n := shortest(lits); n > bestLen {
				best, bestLen = lits, n
			}
		}
		return best, best != nil
	}
	return nil, false
}

// foldsToASCII reports whether a non-ASCII letter matches an ASCII one case-insensitively.
func foldsToASCII(r rune) bool {
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < utf8.RuneSelf {
			return true
		}
	}
	return false
}

func shortest(lits []string) int {
	n := -1
	for _, l := range lits {
		if n < 0 || len(l) < n {
			n = len(l)
		}
	}
	return n
}

// matches reports whether the rule matches msg, whose lower-case form is lower. Go's
// case-insensitive matching folds a few non-ASCII letters onto ASCII ones (ſ onto s, K onto k)
// that strings.ToLower keeps apart, so a message with non-ASCII text runs the whole expression.
func (m messageRule) matches(msg, lower string, ascii bool) bool {
	if !ascii || m.branches == nil {
		return m.re.MatchString(msg)
	}
	for _, b := range m.branches {
		if b.literals != nil && !containsAny(lower, b.literals) {
			continue
		}
		if b.re.MatchString(msg) {
			return true
		}
	}
	return false
}

func containsAny(s string, subs []string) bool {
	for _, l := range subs {
		if strings.Contains(s, l) {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
