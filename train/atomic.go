package train

import "github.com/ortq/ortq/internal/fsutil"

// WriteFileAtomic writes path through write so that readers (and a crash at any moment)
// see either the old file or the complete new one (see internal/fsutil).
var WriteFileAtomic = fsutil.WriteFileAtomic
