//! placeholder: the management console (being written).
