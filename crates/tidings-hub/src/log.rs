//! History: the log of updates that subscribers resume from.
