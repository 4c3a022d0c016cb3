/* Placeholder: the length-prefixed frames example filter is being written. */
