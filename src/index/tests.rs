//! Property tests: the indexes against a naive reference (a list of (connection, pattern)
//! scanned with `is_match` / `may_overlap`).
