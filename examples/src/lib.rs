//! Examples of embedding Synnefo; see the `[[example]]` targets.
