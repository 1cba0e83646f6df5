package domain_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dvsync/dvsync/domain"
)

func TestClassifyDataverse(t *testing.T) {
	const current = "Principal user (Id=b06e8494-999f-f011-b41c-00224804a1a8, type=8, roleCount=8, privilegeCount=420, " +
		"accessMode='0 Read-Write', AADObjectId='d3433988-17f9-40af-ba77-412705aaed0f', MetadataCachePrivilegesCount=12471, " +
		"businessUnitId=e56c78fa-ad25-f011-8c4e-000d3a34767f), is missing prvCreateAccount privilege " +
		"(Id=a4986ba0-6c85-40a9-bb00-fd6000ac0f55) on OTC=1 for entity 'account' (LocalizedName='Account'). " +
		"context.Caller=b06e8494-999f-f011-b41c-00224804a1a8. Consider adding missed privilege to one of the principal (user/team) roles."
	const older = "Principal user (Id=0d3ff1f6-2f3c-e611-80e1-c4346bac3990, type=8) is missing prvAppendToTransactionCurrency privilege (Id=94a1d6c3-0a3b-4d5c-9b0f-1c2d3e4f5a6b)"
	cases := []struct {
		name  string
		err   error
		class domain.Class
		kind  domain.Kind
	}{
		{"privilege, current form", &domain.DataverseError{Status: 403, Code: "0x80040220", Message: current}, domain.ClassSetup, domain.KindMissingPrivilege},
		{"privilege, older form", &domain.DataverseError{Status: 403, Code: "0x80040220", Message: older}, domain.ClassSetup, domain.KindMissingPrivilege},
		{"row missing", &domain.DataverseError{Status: 404, Code: "0x80040217", Message: "account With Id = x Does Not Exist"}, domain.ClassCoupling, domain.KindDestinationDeleted},
		{"duplicate detection answers 500", &domain.DataverseError{Status: 500, Code: "0x80040333", Message: "A record was not created or updated because a duplicate of the current record already exists."}, domain.ClassCoupling, domain.KindDuplicateRecord},
		{"upper-case hex", &domain.DataverseError{Status: 404, Code: "0x8006088A", Message: "Resource not found for the segment 'acounts'."}, domain.ClassSetup, domain.KindSchemaMismatch},
		{"string too long", &domain.DataverseError{Status: 400, Code: "0x80044331", Message: "A validation error occurred."}, domain.ClassCoupling, domain.KindInvalidData},
		{"throttled", &domain.DataverseError{Status: 429, Code: "0x80072321", Message: "Combined execution time ..."}, domain.ClassTransient, domain.KindThrottled},
		{"429 without a code", &domain.DataverseError{Status: 429}, domain.ClassTransient, domain.KindThrottled},
		{"503 from the gateway", &domain.DataverseError{Status: 503, Message: "Service Unavailable"}, domain.ClassTransient, domain.KindServerError},
		{"SQL deadlock", &domain.DataverseError{Status: 500, Code: "0x80044150", Message: "Sql Number: 1205"}, domain.ClassTransient, domain.KindServerError},
		{"OData property error", &domain.DataverseError{Status: 400, Code: "0x0", Message: "Could not find a property named 'x'"}, domain.ClassSetup, domain.KindSchemaMismatch},
		{"401", &domain.DataverseError{Status: 401}, domain.ClassSetup, domain.KindAuthentication},
		{"unknown code", &domain.DataverseError{Status: 400, Code: "0x8004ffff", Message: "Something new"}, domain.ClassSetup, domain.KindUnknown},
		{"wrapped", fmt.Errorf("PATCH accounts(x): %w", &domain.DataverseError{Status: 403, Code: "0x80040220", Message: older}), domain.ClassSetup, domain.KindMissingPrivilege},
		{"unreachable", fmt.Errorf("%w: dial tcp: refused", domain.ErrDataverseUnreachable), domain.ClassTransient, domain.KindNetwork},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := domain.ClassifyDataverse(tc.err)
			if f == nil || f.Class != tc.class || f.Kind != tc.kind || f.Resolution == "" {
				t.Fatalf("classified as %+v; want %s/%s with a resolution", f, tc.class, tc.kind)
			}
		})
	}
	if f := domain.ClassifyDataverse(errors.New("database down")); f != nil {
		t.Fatalf("a non-Dataverse error was classified: %+v", f)
	}
}

func TestMissingPrivilegeDetailsAreParsed(t *testing.T) {
	msg := "Principal user (Id=0d3ff1f6-2f3c-e611-80e1-c4346bac3990, type=8) is missing prvAppendToTransactionCurrency privilege (Id=94a1d6c3-0a3b-4d5c-9b0f-1c2d3e4f5a6b)"
	f := domain.ClassifyDataverse(&domain.DataverseError{Status: 403, Code: "0x80040220", Message: msg})
	want := map[string]string{"privilege": "prvAppendToTransactionCurrency", "verb": "AppendTo", "entity": "TransactionCurrency",
		"user_id": "0d3ff1f6-2f3c-e611-80e1-c4346bac3990", "principal_type": "8"}
	for k, v := range want {
		if f.Details[k] != v {
			t.Errorf("details[%s] = %q, want %q", k, f.Details[k], v)
		}
	}
}
