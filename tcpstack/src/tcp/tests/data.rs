//! (more tests follow)
