package domain_test

import (
	"testing"

	"github.com/dvsync/dvsync/domain"
)

// FuzzClassify: whatever Dataverse answers, the classifier gives a class, a kind and a resolution,
// and never panics. A code it does not know never becomes an endless transient loop unless the
// status or message says so.
func FuzzClassify(f *testing.F) {
	for _, e := range loadCorpus(f) {
		dv := e.asError(f)
		f.Add(dv.Status, dv.Code, dv.Message)
	}
	f.Add(0, "", "")
	f.Fuzz(func(t *testing.T, status int, code, message string) {
		fl := domain.Classifier{}.Classify(&domain.DataverseError{Status: status, Code: code, Message: message})
		if fl == nil || fl.Class == "" || fl.Kind == "" || fl.Resolution == "" {
			t.Fatalf("classified as %+v", fl)
		}
		if fl.Class != domain.ClassSetup && fl.Class != domain.ClassCoupling && fl.Class != domain.ClassTransient {
			t.Fatalf("class %q", fl.Class)
		}
	})
}
