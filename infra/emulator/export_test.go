package emulator

import (
	"errors"
	"fmt"
	"reflect"
)

// IndexesMatchRows reports an entity whose key indexes differ from indexes built anew from its
// rows, or an undo log left behind by a transaction: the tests' check that no write missed them.
func (e *Emulator) IndexesMatchRows() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for name, ent := range e.entities {
		if want := newEntityKeys(ent, e.rows[name]); !reflect.DeepEqual(e.keys[name], want) {
			errs = append(errs, fmt.Errorf("%s: indexes %+v, rebuilt from the rows %+v", name, e.keys[name], want))
		}
	}
	if e.txDepth != 0 || e.undo != nil {
		errs = append(errs, fmt.Errorf("%d transactions open, %d undo entries left", e.txDepth, len(e.undo)))
	}
	return errors.Join(errs...)
}
