"""Protocol state machines for the OpenAI realtime wire format. [pure: no I/O, no clock]"""
