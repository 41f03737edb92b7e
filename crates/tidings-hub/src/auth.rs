//! Authorization: JWTs, the Mercure claims, and where a request carries its token.
