//! Topic selectors: `*`, exact topics and RFC 6570 URI templates.
