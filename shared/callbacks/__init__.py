"""Status callbacks: the event, its URL's rules, the delivery's states and their one writer
(deliveries.py, the outbox), and the circuit and slots that admit an attempt (circuit.py)."""
