// Package fsutil holds the file-system primitives ortq's commands share: atomic file
// writes, replacing a directory by a finished temporary one, and size-bounded reads of
// untrusted files. One implementation, so every writer gets the same crash guarantees.
package fsutil
