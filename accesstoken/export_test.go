package accesstoken

// CacheLen returns the number of tokens v's cache holds.
func CacheLen(v *Verifier) int {
	if v.cache == nil {
		return 0
	}
	return v.cache.len()
}
