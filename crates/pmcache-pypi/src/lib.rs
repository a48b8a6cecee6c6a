//! PyPI frontend.
