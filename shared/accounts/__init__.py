"""Accounts as Twilio has them: SIDs and auth tokens, the tokens encrypted at rest."""
