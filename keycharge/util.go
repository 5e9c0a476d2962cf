package keycharge

import (
	"slices"
	"strings"
)

func sortRecs[T any](s []T, key func(T) string) {
	slices.SortFunc(s, func(a, b T) int { return strings.Compare(key(a), key(b)) })
}
