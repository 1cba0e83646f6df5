package emulator

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
)

// IndexesMatchRows reports an entity whose key or equality indexes differ from indexes built anew
// from its rows, or an undo log left behind by a transaction: the tests' check that no write
// missed them.
func (e *Emulator) IndexesMatchRows() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for name, ent := range e.entities {
		got, want := e.keys[name], newEntityKeys(ent, e.rows[name])
		if !reflect.DeepEqual(got.all, want.all) {
			errs = append(errs, fmt.Errorf("%s: indexes %+v, rebuilt from the rows %+v", name, got.all, want.all))
		}
		for column, x := range got.eq {
			if rebuilt := want.eqIndexOf(column, e.rows[name]); !reflect.DeepEqual(x, rebuilt) {
				errs = append(errs, fmt.Errorf("%s: the index of %s is %v, rebuilt from the rows %v", name, column, x, rebuilt))
			}
		}
	}
	if e.txDepth != 0 || e.undo != nil {
		errs = append(errs, fmt.Errorf("%d transactions open, %d undo entries left", e.txDepth, len(e.undo)))
	}
	return errors.Join(errs...)
}

// ScanFilter is the ids of the rows of an entity set that a $filter keeps, found the slow way (every
// row rendered and tested), sorted: what the indexed answer must equal.
func (e *Emulator) ScanFilter(entitySet, expr string) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent := e.sets[entitySet]
	cond, err := parseFilter(expr)
	if err != nil {
		return nil, err
	}
	ids := []string{}
	for id, r := range e.rows[ent.LogicalName] {
		if cond.match(render(ent, r, nil)) {
			ids = append(ids, id.String())
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Indexed reports whether a $filter is answered from the equality indexes.
func (e *Emulator) Indexed(entitySet, expr string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent := e.sets[entitySet]
	cond, err := parseFilter(expr)
	if err != nil {
		return false
	}
	_, ok := e.keys[ent.LogicalName].candidates(cond, e.rows[ent.LogicalName])
	return ok
}
