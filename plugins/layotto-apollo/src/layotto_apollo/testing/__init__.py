"""Test support shipped with layotto-apollo: a protocol-faithful Apollo server.

`ApolloTestServer` serves the config service, the meta service and the Open API from memory on a
free port (see `layotto_apollo.testing.server`), so the plugin's tests, other plugins' tests and
users' tests can run against Apollo without the Java server.
"""

from layotto_apollo.testing.server import ApolloState, ApolloTestServer, apollo_signature

__all__ = ["ApolloState", "ApolloTestServer", "apollo_signature"]
