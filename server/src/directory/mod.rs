//! Account sources.
