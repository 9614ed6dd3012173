//! Math answer extraction and equivalence (placeholder: filled in by the math work).
