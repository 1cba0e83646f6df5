package dataverse

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/text/cases"
	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/microbatch"
)

// The match lookups of many records (an initial load against an environment that already holds
// rows asks one per record) are merged: the lookups of one shape made at the same moment become
// one GET whose $filter is the or of each record's terms, and its rows are handed back to the
// records they equal. Each record then gets the rows its own query would have found; where that
// cannot be told from the merged answer, its own query is sent after all.
const (
	maxLookupsPerQuery = 50       // records per merged GET
	maxMergedPathLen   = 16 << 10 // bytes of a merged GET's encoded path and query, far below Dataverse's URL limits
	maxLookupsInFlight = 16       // merged GETs of one shape at once; while all are out, lookups gather
	maxMergedTop       = 50       // a lookup's own $top, at most, to be merged: 50×50+1 stays within one page of 5,000
)

// lookupCall is one record's lookup and its caller's context, whose deadline bounds the merged
// GET it is in.
type lookupCall struct {
	ctx context.Context
	q   domain.MatchQuery
}

// errOwnQuery is a lookup's answer when the merged GET cannot tell its rows: its caller sends its
// own query (Batched.FindRows).
var errOwnQuery = errors.New("dataverse: the lookup needs its own query")

// lookupShape is what lookups must share to be merged: the entity set, the attributes matched and
// returned.
func lookupShape(q domain.MatchQuery) string {
	var b strings.Builder
	b.WriteString(q.EntitySet + "\x00" + q.IDAttribute + "\x00" + q.NameAttribute)
	for _, v := range q.Values {
		b.WriteString("\x00" + v.Attribute)
	}
	return b.String()
}

// mergeable reports whether q can share a GET: text values only (numbers would compare as
// Dataverse reads them, which this side does not know) and a small $top, so that the merged
// answer is one page.
func mergeable(q domain.MatchQuery) bool {
	if q.Top <= 0 || q.Top > maxMergedTop || len(q.Values) == 0 {
		return false
	}
	for _, v := range q.Values {
		if _, ok := v.Value.(string); !ok {
			return false
		}
	}
	return true
}

// equalityKey is a value reduced so that any two Dataverse's eq finds equal reduce alike: the
// database's collation disregards case, accents and width (Latin1_General_CI_AI is the default),
// trailing spaces, and characters of no weight (a soft hyphen, a zero-width space), and other
// collations join more (ligatures with their letters, a dotless i with i). So the key keeps only
// letters and digits, folded, decomposed and without their marks, with the letters a collation
// may expand spelt out. Being coarser than any collation is what makes it safe: values that
// reduce alike but differ never share a GET (mergeLookups), and a row goes to the one record
// whose key is its own.
func equalityKey(s string) string {
	t := transform.Chain(norm.NFKD, runes.Remove(runes.In(unicode.Mn)), cases.Fold())
	folded, _, err := transform.String(t, s)
	if err != nil {
		folded = strings.ToLower(s)
	}
	var b strings.Builder
	for _, r := range folded {
		if spelt, ok := speltOut[r]; ok {
			b.WriteString(spelt)
		} else if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// speltOut are letters that decomposition leaves whole but some collation equals to others.
var speltOut = map[rune]string{'æ': "ae", 'œ': "oe", 'ø': "o", 'đ': "d", 'ð': "d", 'ł': "l", 'ı': "i", 'þ': "th", 'ŀ': "l"}

// joinKey joins a record's parts so that no two lists of parts give one key.
func joinKey(parts []string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(strconv.Itoa(len(p)) + ":" + p)
	}
	return b.String()
}

// lookupKey is a record's values reduced (equalityKey): records that may ask the same rows.
func lookupKey(values []domain.MatchValue) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = equalityKey(v.Value.(string))
	}
	return joinKey(parts)
}

// rowKey is a found row's values in the form of lookupKey.
func rowKey(values []domain.MatchValue, row domain.FoundRow) (string, bool) {
	parts := make([]string, len(values))
	for i, v := range values {
		s, ok := row.Values[v.Attribute].(string)
		if !ok {
			return "", false
		}
		parts[i] = equalityKey(s)
	}
	return joinKey(parts), true
}

// exactKey tells two records' values apart exactly.
func exactKey(values []domain.MatchValue) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = v.Value.(string)
	}
	return joinKey(parts)
}

// lookupBatcher is the batcher of a lookup shape, started at its first lookup.
func (b *Batched) lookupBatcher(shape string) (*microbatch.Batcher[lookupCall, []domain.FoundRow], error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lookupsClosed {
		return nil, microbatch.ErrClosed
	}
	if bt := b.lookups[shape]; bt != nil {
		return bt, nil
	}
	bt := microbatch.New(microbatch.Config{MaxSize: maxLookupsPerQuery, Linger: b.cfg.Linger, MaxInFlight: maxLookupsInFlight},
		b.mergeLookups)
	b.lookups[shape] = bt
	return bt, nil
}

// mergeLookups answers a flush of lookups of one shape with one GET. A record falls back to its
// own query (errOwnQuery: its caller sends it, with its own deadline) when the merged answer
// cannot say what that would have found: its values reduce like another record's but differ (a
// collation might keep them apart, and each must see only its own rows), the GET would be too
// long with it, the GET failed (its own error is the one to report), the answer was cut by $top
// and it has fewer rows than it asked for, or the answer holds a row no record's values account
// for. A record alone sends the plain query of its own.
//
// The GET goes with the earliest of its callers' deadlines, so that a caller that cannot wait
// for a closed gate hears of it in time (from its own query), and nobody waits past it.
func (b *Batched) mergeLookups(ctx context.Context, calls []lookupCall) ([][]domain.FoundRow, []error) {
	outs, errs := make([][]domain.FoundRow, len(calls)), make([]error, len(calls))
	var members []int
	exactOf := map[string]string{} // lookupKey → the values that have it in this GET
	for i, c := range calls {
		key, exact := lookupKey(c.q.Values), exactKey(c.q.Values)
		if have, ok := exactOf[key]; ok && have != exact {
			errs[i] = errOwnQuery
			continue
		}
		exactOf[key] = exact
		members = append(members, i)
	}
	if len(members) == 1 {
		errs[members[0]] = errOwnQuery
	}
	if len(members) < 2 {
		return outs, errs
	}
	req, top, members := mergedRequest(calls, members, errs)
	if len(members) == 1 { // the second did not fit
		errs[members[0]] = errOwnQuery
		return outs, errs
	}
	gctx := ctx
	for _, i := range members {
		if d, ok := calls[i].ctx.Deadline(); ok {
			if cur, ok := gctx.Deadline(); !ok || d.Before(cur) {
				var cancel context.CancelFunc
				gctx, cancel = context.WithDeadline(gctx, d)
				defer cancel()
			}
		}
	}
	shape := calls[members[0]].q // the shape's attributes, for reading the rows
	rows, err := foundRows(shape, req)(b.do(gctx, req))
	if err != nil {
		for _, i := range members {
			errs[i] = errOwnQuery
		}
		return outs, errs
	}
	byKey := map[string][]int{}
	for _, i := range members {
		k := lookupKey(calls[i].q.Values)
		byKey[k] = append(byKey[k], i)
		outs[i] = []domain.FoundRow{}
	}
	for _, row := range rows {
		k, ok := rowKey(shape.Values, row)
		if !ok || byKey[k] == nil {
			// Dataverse found it equal to a record's values where the key does not: only the
			// records' own queries can say whose it is.
			for _, i := range members {
				outs[i], errs[i] = nil, errOwnQuery
			}
			return outs, errs
		}
		for _, i := range byKey[k] {
			if len(outs[i]) < calls[i].q.Top {
				outs[i] = append(outs[i], row)
			}
		}
	}
	if len(rows) >= top {
		for _, i := range members {
			if len(outs[i]) < calls[i].q.Top {
				outs[i], errs[i] = nil, errOwnQuery // the cut may have taken rows of its
			}
		}
	}
	return outs, errs
}

// mergedRequest is the GET of the members' lookups: the or of each record's terms, $top the sum
// of theirs and one more, so that an answer of fewer rows than top is known to be whole. Members
// are taken while the request stays short enough; the others are told to send their own query
// (errs), and the members taken are returned.
func mergedRequest(calls []lookupCall, members []int, errs []error) (rowRequest, int, []int) {
	first := calls[members[0]].q
	sel := []string{first.IDAttribute}
	if first.NameAttribute != "" {
		sel = append(sel, first.NameAttribute)
	}
	for _, v := range first.Values {
		if v.Attribute != first.NameAttribute && v.Attribute != first.IDAttribute {
			sel = append(sel, v.Attribute)
		}
	}
	seen := map[string]bool{}
	var alternatives []string
	length := len(first.EntitySet) + len(strings.Join(sel, ",")) + 32 // the path, $select and $top
	top := 1
	for k, i := range members {
		q := calls[i].q
		if exact := exactKey(q.Values); !seen[exact] {
			terms := make([]string, len(q.Values))
			for n, v := range q.Values {
				lit, _ := Literal(v.Value) // text: mergeable
				terms[n] = v.Attribute + " eq " + lit
			}
			alternative := "(" + strings.Join(terms, " and ") + ")"
			if length += len(url.QueryEscape(alternative)) + len("%20or%20"); length > maxMergedPathLen && k > 0 {
				for _, rest := range members[k:] {
					errs[rest] = errOwnQuery
				}
				members = members[:k]
				break
			}
			seen[exact], alternatives = true, append(alternatives, alternative)
		}
		top += q.Top
	}
	opts := url.Values{"$select": {strings.Join(sel, ",")}, "$filter": {strings.Join(alternatives, " or ")}, "$top": {strconv.Itoa(top)}}
	// OData wants $-options unescaped and spaces as %20, not the "+" url.Values would write.
	path := first.EntitySet + "?" + strings.ReplaceAll(opts.Encode(), "+", "%20")
	return rowRequest{method: http.MethodGet, row: domain.RowRef{EntitySet: first.EntitySet}, path: path}, top, members
}
