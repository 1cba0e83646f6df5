package emulator

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/google/uuid"
)

// filter is a parsed OData $filter: comparisons (eq, ne, gt, ge, lt, le), and/or/not,
// parentheses, and contains/startswith/endswith.
type filter interface {
	match(r map[string]any) bool
}

type cmp struct {
	prop, op string
	value    any
}

type logical struct {
	op          string // and, or
	left, right filter
}

type not struct{ inner filter }

type strFunc struct {
	name, prop, arg string
}

func (c cmp) match(r map[string]any) bool {
	v := r[c.prop]
	if c.value == nil || v == nil {
		switch c.op {
		case "eq":
			return v == nil && c.value == nil
		case "ne":
			return (v == nil) != (c.value == nil)
		}
		return false
	}
	var order int
	if want, ok := c.value.(float64); ok {
		got, ok := toFloat(v)
		if !ok {
			return false
		}
		order = compareFloat(got, want)
	} else if b, ok := c.value.(bool); ok {
		if c.op != "eq" && c.op != "ne" {
			return false
		}
		return (v == b) == (c.op == "eq")
	} else {
		// Dataverse compares text without regard to case.
		order = strings.Compare(strings.ToLower(fmt.Sprint(v)), strings.ToLower(fmt.Sprint(c.value)))
	}
	switch c.op {
	case "eq":
		return order == 0
	case "ne":
		return order != 0
	case "gt":
		return order > 0
	case "ge":
		return order >= 0
	case "lt":
		return order < 0
	case "le":
		return order <= 0
	}
	return false
}

func compareFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (l logical) match(r map[string]any) bool {
	if l.op == "and" {
		return l.left.match(r) && l.right.match(r)
	}
	return l.left.match(r) || l.right.match(r)
}

func (n not) match(r map[string]any) bool { return !n.inner.match(r) }

func (f strFunc) match(r map[string]any) bool {
	v, ok := r[f.prop].(string)
	if !ok {
		return false
	}
	v, arg := strings.ToLower(v), strings.ToLower(f.arg)
	switch f.name {
	case "contains":
		return strings.Contains(v, arg)
	case "startswith":
		return strings.HasPrefix(v, arg)
	}
	return strings.HasSuffix(v, arg)
}

type lexeme struct {
	kind string // ident, string, number, punct
	text string
}

func tokenize(s string) ([]lexeme, error) {
	var out []lexeme
	for i := 0; i < len(s); {
		c := rune(s[i])
		switch {
		case c == ' ':
			i++
		case c == '(' || c == ')' || c == ',':
			out = append(out, lexeme{"punct", string(c)})
			i++
		case c == '\'':
			var b strings.Builder
			j := i + 1
			for ; j < len(s); j++ {
				if s[j] == '\'' {
					if j+1 < len(s) && s[j+1] == '\'' {
						b.WriteByte('\'')
						j++
						continue
					}
					break
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, errors.New("unterminated string literal")
			}
			out = append(out, lexeme{"string", b.String()})
			i = j + 1
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" (),'", rune(s[j])) {
				j++
			}
			word := s[i:j]
			kind := "ident"
			if unicode.IsDigit(c) || c == '-' {
				kind = "number"
			}
			if _, err := uuid.Parse(word); err == nil {
				kind = "guid"
			}
			out = append(out, lexeme{kind, word})
			i = j
		}
	}
	return out, nil
}

type parser struct {
	toks []lexeme
	pos  int
}

func (p *parser) peek() lexeme {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return lexeme{}
}

func (p *parser) next() lexeme { t := p.peek(); p.pos++; return t }

func (p *parser) expect(text string) error {
	if t := p.next(); t.text != text {
		return fmt.Errorf("expected %q, found %q", text, t.text)
	}
	return nil
}

// parseFilter reads a $filter expression.
func parseFilter(s string) (filter, error) {
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	f, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.pos != len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.peek().text)
	}
	return f, nil
}

func (p *parser) or() (filter, error) {
	left, err := p.and()
	for err == nil && p.peek().text == "or" {
		p.next()
		var right filter
		if right, err = p.and(); err == nil {
			left = logical{"or", left, right}
		}
	}
	return left, err
}

func (p *parser) and() (filter, error) {
	left, err := p.unary()
	for err == nil && p.peek().text == "and" {
		p.next()
		var right filter
		if right, err = p.unary(); err == nil {
			left = logical{"and", left, right}
		}
	}
	return left, err
}

func (p *parser) unary() (filter, error) {
	switch t := p.peek(); {
	case t.text == "not":
		p.next()
		inner, err := p.unary()
		return not{inner}, err
	case t.text == "(":
		p.next()
		inner, err := p.or()
		if err == nil {
			err = p.expect(")")
		}
		return inner, err
	case t.text == "contains" || t.text == "startswith" || t.text == "endswith":
		p.next()
		if err := p.expect("("); err != nil {
			return nil, err
		}
		prop := p.next()
		if err := p.expect(","); err != nil {
			return nil, err
		}
		arg := p.next()
		if arg.kind != "string" || prop.kind != "ident" {
			return nil, fmt.Errorf("%s needs a property and a string", t.text)
		}
		return strFunc{t.text, prop.text, arg.text}, p.expect(")")
	}
	prop, op, val := p.next(), p.next(), p.next()
	if prop.kind != "ident" {
		return nil, fmt.Errorf("expected a property, found %q", prop.text)
	}
	switch op.text {
	case "eq", "ne", "gt", "ge", "lt", "le":
	default:
		return nil, fmt.Errorf("unknown operator %q", op.text)
	}
	v, err := literal(val)
	return cmp{prop.text, op.text, v}, err
}

func literal(t lexeme) (any, error) {
	switch t.kind {
	case "string":
		return t.text, nil
	case "guid":
		return strings.ToLower(t.text), nil
	case "number":
		f, err := strconv.ParseFloat(t.text, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", t.text)
		}
		return f, nil
	}
	switch t.text {
	case "null":
		return nil, nil
	case "true", "false":
		return t.text == "true", nil
	}
	return nil, fmt.Errorf("cannot read literal %q", t.text)
}

// parseLiteral reads one key value in a URL key segment.
func parseLiteral(s string) (any, error) {
	toks, err := tokenize(s)
	if err != nil || len(toks) != 1 {
		return nil, fmt.Errorf("cannot read literal %s", s)
	}
	return literal(toks[0])
}

func compareValues(a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	fa, okA := toFloat(a)
	fb, okB := toFloat(b)
	if okA && okB {
		return compareFloat(fa, fb)
	}
	return strings.Compare(strings.ToLower(fmt.Sprint(a)), strings.ToLower(fmt.Sprint(b)))
}

// splitOutsideQuotes splits s at sep where sep is not inside a '...' literal.
func splitOutsideQuotes(s, sep string) []string {
	var parts []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			inQuote = !inQuote
		}
		if !inQuote && strings.HasPrefix(s[i:], sep) {
			parts = append(parts, s[start:i])
			start = i + len(sep)
			i += len(sep) - 1
		}
	}
	return append(parts, s[start:])
}

// maxPageSize reads Prefer: odata.maxpagesize=n; Dataverse's default page is 5000 rows.
func maxPageSize(prefer []string) int {
	for _, p := range prefer {
		for _, part := range strings.Split(p, ",") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(part), "odata.maxpagesize="); ok {
				if n, err := strconv.Atoi(strings.Trim(v, `"`)); err == nil && n > 0 {
					return min(n, 5000)
				}
			}
		}
	}
	return 5000
}
