//go:build wasm

package httpx

// dbUnavailable: the WebAssembly build (the browser wallet uses the
// client) links no database driver, so no error is a database's.
func dbUnavailable(error) bool { return false }
