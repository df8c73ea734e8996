/**
 * The longest terminate reason the API takes (POST /sessions/{id}/terminate). One definition for the
 * API's schema and the web console's form, which is bundled for the browser: this module imports nothing.
 */
export const TERMINATE_REASON_MAX_CHARS = 500;
