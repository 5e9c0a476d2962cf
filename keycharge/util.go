package keycharge

import (
	"errors"
	"slices"
	"strings"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func sortRecs[T any](s []T, key func(T) string) {
	slices.SortFunc(s, func(a, b T) int { return strings.Compare(key(a), key(b)) })
}
