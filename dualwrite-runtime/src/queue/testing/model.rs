//! The model-based suite (being written).
