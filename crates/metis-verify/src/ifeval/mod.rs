//! IFEval instruction checkers (placeholder: filled in by the IFEval work).
