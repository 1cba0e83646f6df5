package main

import (
	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/natsjs"
)

// In dev the page's links lead somewhere: Dataverse rows to the emulator's page of the row (the
// Dataverse URL is the emulator's), and source records, as there is no Business Central to open,
// to the page's own source view of the record's newest change event in the changes stream.

// devSourceLinks points the page's source links at its source view, unless DVSYNC_SOURCE_URL
// says otherwise. The link is relative: it opens on whichever host name the page was opened
// with (127.0.0.1 or localhost; the session cookie is per host).
func devSourceLinks(cfg *Config) {
	if cfg.SourceURL == "" {
		cfg.SourceURL = httpapi.SourceViewPath
	}
}

// sourceView serves the source view when the source links point at it (dev's, or a deployment
// that sets DVSYNC_SOURCE_URL=/source/{table}/{key}); nil otherwise: off.
func (s *stack) sourceView() httpapi.SourceFinder {
	if s.cfg.SourceURL != httpapi.SourceViewPath || s.js == nil {
		return nil
	}
	return natsjs.ChangeFinder{JS: s.js}
}
