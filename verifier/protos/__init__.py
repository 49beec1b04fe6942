"""verifier/protos/: the prototypes of what a program may call (kfuncs today; helpers as
they are modelled): names, ids, argument and return kinds, flags. The contract the checker
enforces and the loader resolves names against; imports only verifier.isa and
verifier.regtypes."""
